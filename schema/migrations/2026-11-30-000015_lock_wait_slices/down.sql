drop procedure syncline_advisory_lock_wait(bigint);
drop procedure syncline_advisory_lock_wait(integer, integer);
