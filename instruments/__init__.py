"""The instruments: the memcached dashboard, the benchmark and the local cluster."""
