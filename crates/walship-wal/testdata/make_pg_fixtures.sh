#!/bin/sh
# Produce real WAL first pages from a local PostgreSQL (run as the postgres
# user; needs initdb/pg_ctl on PATH). Creates 1 MiB segments on timeline 1,
# ends an archive recovery to get timeline 2 (whose first segment starts with a
# page written on timeline 1, and whose predecessor is archived as .partial),
# and keeps the first 8 KiB page of a few archived files under testdata/pg15/.
set -eu
OUT=$(cd "$(dirname "$0")" && pwd)/pg15
W=$(mktemp -d /tmp/walship-pgfix.XXXXXX)
PORT=54391
mkdir -p "$W/archive" "$OUT"
initdb -D "$W/data" --wal-segsize=1 -A trust -U postgres >/dev/null
cat >>"$W/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$W'
wal_level = replica
archive_mode = on
archive_command = 'cp %p $W/archive/%f'
CONF
pg_ctl -D "$W/data" -l "$W/log" -w start >/dev/null
psql() { command psql -X -q -h "$W" -p $PORT -U postgres -d postgres "$@"; }
psql -c "create table t(x int); insert into t select generate_series(1,20000);"
psql -c "select pg_switch_wal();" >/dev/null
psql -c "insert into t select generate_series(1,20000);"
psql -c "select pg_switch_wal();" >/dev/null
psql -c "insert into t select generate_series(1,5000);"
sleep 2
pg_ctl -D "$W/data" -m immediate -w stop >/dev/null
# End an archive recovery: PostgreSQL picks timeline 2 and archives the last
# timeline-1 segment as .partial.
touch "$W/data/recovery.signal"
echo "restore_command = 'cp $W/archive/%f %p'" >>"$W/data/postgresql.conf"
pg_ctl -D "$W/data" -l "$W/log" -w start >/dev/null
sleep 2
psql -c "select pg_switch_wal();" >/dev/null
psql -c "insert into t select generate_series(1,20000);"
psql -c "select pg_switch_wal();" >/dev/null
sleep 3
pg_ctl -D "$W/data" -m fast -w stop >/dev/null
ls -l "$W/archive"
for f in "$W/archive"/*; do
  case "$f" in
    *.history|*.backup) cp "$f" "$OUT/" ;;
    *) head -c 8192 "$f" >"$OUT/$(basename "$f").page"; wc -c <"$f" >"$OUT/$(basename "$f").len" ;;
  esac
done
rm -rf "$W"
