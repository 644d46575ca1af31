drop table topology_transactions;
