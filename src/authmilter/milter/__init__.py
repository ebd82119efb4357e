"""The milter adapter: the only package that imports pymilter (except `sockets`, pure)."""
