"""The Spark runtime the jobs run on: the context (`context`), the local JVM's class-data
sharing archive (`cds`), the Python workers' daemon (`daemon`) and their start while the
driver plans (`workers`).

Imports nothing itself: `daemon` must run before anything imports pyspark.
"""
