#!/bin/sh
# Entry point of the hdfs image: the NameNode (formatted on first start), the DataNode, or an
# `hdfs dfs` shell, with the Java 17 flags of dev/hdfs.py (HADOOP-19310).
#
#   hdfs.sh namenode | datanode | dfs -mkdir -p /dicomlake/landing
set -eu
OPENS=""
for pkg in java.io java.lang java.lang.reflect java.math java.net java.text java.util \
           java.util.concurrent java.util.zip sun.security.util sun.security.x509; do
  OPENS="$OPENS --add-opens=java.base/$pkg=ALL-UNNAMED"
done
run() {
  # shellcheck disable=SC2086  # OPENS is a list of flags
  exec java -Xmx"${HDFS_HEAP:-512m}" $OPENS -Djava.net.preferIPv4Stack=true \
    -Dhadoop.log.dir=/hadoop/logs -Dhadoop.home.dir=/opt/hadoop \
    -Dlog4j.configuration=file:/opt/hadoop/conf/log4j.properties \
    -cp "/opt/hadoop/conf:/opt/hadoop/lib/*" "$@"
}
case "${1:-}" in
  namenode)
    if [ ! -d /hadoop/dfs/name/current ]; then
      java $OPENS -cp "/opt/hadoop/conf:/opt/hadoop/lib/*" \
        org.apache.hadoop.hdfs.server.namenode.NameNode -format -nonInteractive
    fi
    run org.apache.hadoop.hdfs.server.namenode.NameNode ;;
  datanode)
    run org.apache.hadoop.hdfs.server.datanode.DataNode ;;
  dfs)
    shift
    run org.apache.hadoop.fs.FsShell "$@" ;;
  *)
    echo "usage: hdfs.sh namenode | datanode | dfs ARGS..." >&2
    exit 2 ;;
esac
