"""The Spark runtime the jobs run on: the context (`context`), the local JVM's class-data
sharing archive (`cds`) and the Python workers' daemon (`daemon`).

Imports nothing itself: `daemon` must run before anything imports pyspark.
"""
