"""The throughput harness: loghogd beside rsyslog, the logging-cookbook receiver
and the pure-Python ceiling, on the same records, in one run (`benchmarks/run`)."""
