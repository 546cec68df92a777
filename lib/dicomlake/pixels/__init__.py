"""Pure pixel handling: lossless frame codecs and the encrypted pack file format.

Bytes and plain values in, values out: nothing here touches a filesystem or imports pyspark.
"""
