#!/usr/bin/env bash
# Kamailio's xcap_server for docs/interop-kamailio-xcap.md.
#   kamailio-xcap.sh start DBNAME [refresh]
#                                    XCAP root http://127.0.0.1:18000/xcap-root/,
#                                    documents in postgres://postgres@127.0.0.1:5432/DBNAME;
#                                    refresh: each pres-rules PUT or DELETE sends
#                                    refreshWatchers to 127.0.0.1:18081 (WITH_REFRESH)
#   kamailio-xcap.sh stop | pid | log
# Runtime files in $KAMAILIO_RUN (default /tmp/kamxcap-run); only the PID in
# its own pid file is ever signalled.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
run=${KAMAILIO_RUN:-/tmp/kamxcap-run}
pidf=$run/kamailio.pid
mkdir -p "$run"
stop() {
  [ -s "$pidf" ] || return 0
  local p; p=$(cat "$pidf")
  if kill -0 "$p" 2>/dev/null && grep -q kamailio "/proc/$p/cmdline" 2>/dev/null; then
    kill -TERM "$p"; for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p"
  fi
  rm -f "$pidf"
}
start() {
  local db=$1 extra=()
  [ "${2:-}" = refresh ] && extra=(-A WITH_REFRESH)
  sed -e "s|@RUN@|$run|g" "$here/kamailio-xcap.cfg" > "$run/kamailio.cfg"
  kamailio -f "$run/kamailio.cfg" -P "$pidf" -Y "$run" -m 64 -M 8 -DD -E \
    -A "DBURL=\"postgres://postgres@127.0.0.1:5432/$db\"" "${extra[@]}" >> "$run/kamailio.log" 2>&1 &
  for _ in $(seq 1 100); do
    [ -s "$pidf" ] && kamcmd -s "unix:$run/kamailio_ctl" core.uptime >/dev/null 2>&1 && break; sleep 0.1
  done
  [ -s "$pidf" ] || { echo "kamailio did not start; see $run/kamailio.log"; tail -20 "$run/kamailio.log"; exit 1; }
  echo "kamailio xcap_server on http://127.0.0.1:18000/xcap-root/, db $db, pid $(cat "$pidf")"
}
case ${1:-} in
  start) start "${2:?database name}" "${3:-}";;
  stop) stop;;
  pid) cat "$pidf";;
  log) cat "$run/kamailio.log";;
  *) echo "usage: $0 start DBNAME [refresh] | stop | pid | log"; exit 2;;
esac
