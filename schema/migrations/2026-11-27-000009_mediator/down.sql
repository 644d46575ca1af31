drop table mediator_request_uuids;
drop table mediator_requests;
drop table mediator_position;
