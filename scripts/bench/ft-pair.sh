# Shared by scripts/bench-ft and scripts/failover-load: a primary+backup pair of `mcu serve`
# in the namespace test bed, observed over HTTP, and sipp callers in rooms (one talker
# playing sipp's recorded A-law speech per room, the others listening).
#
# Sourced after scripts/lib.sh. The caller sets, before calling anything here:
#   LOG_TAG          prefix of log lines ("bench-ft")
#   work             scratch directory (logs, scenarios)
#   MCU_BIN          the server binary (see copy_mcu)
#   PY               a python3 for scripts/bench/*.py
#   NS_P NS_B PRIMARY BACKUP   the pair's namespaces and own addresses
#   ADMIN_AUTH_HEADER          from lib.sh's `admin_token` (the servers get its
#                              --admin-token-file: their HTTP listens on non-loopback addresses)
# and declares the arrays this file appends to (the caller's trap cleans them up):
#   pids=()      sipp, tcpdump: stop_pids at exit
#   servers=()   mcu: stop_servers at exit, in start order
#   watchers=()  watch_pid loops
# shellcheck shell=bash
# shellcheck disable=SC2154  # the variables above are the caller's

log() { echo "[$LOG_TAG $(date -u +%T)] $*" >&2; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# wait_until SECONDS DESCRIPTION CMD...: poll CMD every 100 ms.
wait_until() {
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { log "timed out after ${limit}s waiting for: $what"; return 1; }
    sleep 0.1
  done
}
http() { # NS ADDR PATH (the admin API's token sent along)
  in_ns "$1" curl -sf --max-time 2 -H @"$ADMIN_AUTH_HEADER" "http://$2:8080$3"
}
json_get() { # EXPR (python, `j` is the document) < JSON
  python3 -c 'import json,sys; j=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"
}
# Both nodes see each other and the backup holds the full state.
pair_ready() {
  local p b
  p=$(http "$NS_P" "$PRIMARY" /api/status) && b=$(http "$NS_B" "$BACKUP" /api/status) || return 1
  [ "$(json_get 'j["role"],j["peer"],j["synced"]' <<<"$p")" = "('primary', 'alive', True)" ] &&
    [ "$(json_get 'j["role"],j["peer"],j["synced"]' <<<"$b")" = "('backup', 'alive', True)" ]
}
participants() { # NS ADDR -> the node's mcu_participants gauge
  http "$1" "$2" /metrics | awk '$1 == "mcu_participants" {print $2}'
}
# The backup acknowledged everything the primary wrote.
backup_caught_up() {
  local p
  p=$(http "$NS_P" "$PRIMARY" /api/status) || return 1
  [ "$(json_get 'j["synced"], j["replication"]["unacked"]' <<<"$p")" = "(True, 0)" ] && pair_ready
}
# watch_pid NAME PID: note in $work/events.log when PID ends (diagnostics: a node or capture
# that dies during the run invalidates the figures).
watch_pid() {
  ( while kill -0 "$2" 2>/dev/null; do sleep 0.2; done
    echo "$(date -u +%T.%N | cut -c1-12) $1 (pid $2) ended" >>"$work/events.log" ) &
  watchers+=($!)
}
# copy_mcu SRC: a private copy at $MCU_BIN, so that a rebuild during the run does not swap
# the binary under the servers.
copy_mcu() {
  [ -x "$1" ] || { echo "$1 missing (cargo build --release -p mcu)" >&2; exit 1; }
  cp "$1" "$MCU_BIN.tmp" && mv -f "$MCU_BIN.tmp" "$MCU_BIN"
}
# start_server NS NAME ARGS... -> LAST_PID. The PID of `ip netns exec ... mcu` is the mcu
# process itself (ip execs it); check that it runs inside NS. Log: $work/NAME.log.
start_server() {
  local ns=$1 name=$2
  shift 2
  ip netns exec "$ns" "$MCU_BIN" serve "$@" >"$work/$name.log" 2>&1 &
  LAST_PID=$!
  servers+=("$LAST_PID")
  wait_until 5 "$name in $ns" ns_has_pid "$ns" "$LAST_PID" ||
    { log "$name is not running in $ns"; cat "$work/$name.log" >&2; exit 1; }
  watch_pid "$name" "$LAST_PID"
}
# (comm: the first 15 bytes of the name)
ns_has_pid() {
  local name
  name=$(basename "$MCU_BIN")
  ip netns pids "$1" | grep -qx "$2" && [ "$(cat "/proc/$2/comm")" = "${name:0:15}" ]
}
# stop_servers: SIGTERM each mcu in start order (the backup first, so that it does not take
# over), waiting up to 5 s for each (SIGKILL after). One already gone is noted in events.log
# with its exit status (> 128: killed by signal status - 128).
stop_servers() {
  local p rc
  for p in "${servers[@]}"; do
    if ! kill -TERM "$p" 2>/dev/null; then
      rc=0
      wait "$p" 2>/dev/null || rc=$?
      echo "$(date -u +%T.%N | cut -c1-12) mcu pid $p had already exited, status $rc" >>"$work/events.log"
      continue
    fi
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  servers=()
}
# stop_pids SIGNAL: send SIGNAL to every pid in pids, wait up to 5 s for each (SIGKILL
# after), empty the list.
stop_pids() {
  local p
  for p in "${pids[@]}"; do kill "-$1" "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  pids=()
}
# ft_cleanup PREFIX: everything this file started, then the test bed's namespaces (by name).
ft_cleanup() {
  local p
  for p in "${watchers[@]}"; do kill "$p" 2>/dev/null || true; done
  stop_pids TERM
  stop_servers
  wait 2>/dev/null
  TESTBED_PREFIX=$1 scripts/testbed down >/dev/null 2>&1
}

# --- sipp -------------------------------------------------------------------------------
# sipp_scenario FILE BODY: INVITE (A-law only) / 200 / ACK, BODY, BYE / 200.
sipp_scenario() {
  cat >"$1" <<EOF
<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<!-- Generated by scripts/bench/ft-pair.sh for $LOG_TAG. -->
<scenario name="$LOG_TAG">
  <send retrans="500"><![CDATA[
      INVITE sip:[field0]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: bft <sip:bft[call_number]@[local_ip]:[local_port]>;tag=[pid]B[call_number]
      To: <sip:[field0]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:bft@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=bft 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [auto_media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000
    ]]></send>
  <recv response="100" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
      ACK sip:[field0]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: bft <sip:bft[call_number]@[local_ip]:[local_port]>;tag=[pid]B[call_number]
      To: <sip:[field0]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]></send>
$2
  <send retrans="500"><![CDATA[
      BYE sip:[field0]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: bft <sip:bft[call_number]@[local_ip]:[local_port]>;tag=[pid]B[call_number]
      To: <sip:[field0]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]></send>
  <recv response="200"/>
</scenario>
EOF
}
# sipp_conference DIR HOLD_MS LISTENER_MEDIA: DIR/talker.xml and DIR/listener.xml (calls of
# HOLD_MS) with their captures in DIR/pcap. The talker plays sipp's A-law capture (236
# packets of 30 ms, 7.08 s) looped into one continuous stream (seq/timestamps continue:
# replaying the file restarts them, which no client does); listeners send nothing (none) or
# A-law silence on the same cadence (silence: a muted phone without DTX).
sipp_conference() {
  local dir=$1 hold=$2 media=$3
  mkdir -p "$dir/pcap"
  ln -sf /usr/share/sip-tester/*.pcap "$dir/pcap/"
  "$PY" scripts/bench/loop_rtp_pcap.py /usr/share/sip-tester/g711a.pcap "$dir/pcap/talk-loop.pcap" \
    $(( hold / 1000 )) >/dev/null
  sipp_scenario "$dir/talker.xml" "  <nop><action><exec play_pcap_audio=\"pcap/talk-loop.pcap\"/></action></nop>
  <pause milliseconds=\"$hold\"/>"
  case "$media" in
    none) sipp_scenario "$dir/listener.xml" "  <pause milliseconds=\"$hold\"/>" ;;
    silence)
      "$PY" scripts/bench/loop_rtp_pcap.py /usr/share/sip-tester/g711a.pcap "$dir/pcap/silence-loop.pcap" \
        $(( hold / 1000 )) silence >/dev/null
      sipp_scenario "$dir/listener.xml" "  <nop><action><exec play_pcap_audio=\"pcap/silence-loop.pcap\"/></action></nop>
  <pause milliseconds=\"$hold\"/>" ;;
    *) echo "LISTENER_MEDIA: none or silence" >&2; exit 2 ;;
  esac
}
# room_csvs DIR ROOMS PER_ROOM LISTENERS: DIR/talker.csv (one talker in each of room1..ROOMS)
# and DIR/listener.csv (PER_ROOM listeners per room in order while there are listeners left;
# more than ROOMS x PER_ROOM: the rest in room1).
room_csvs() {
  local dir=$1 rooms=$2 per=$3 listeners=$4 r n left
  { echo SEQUENTIAL; for r in $(seq 1 "$rooms"); do echo "room$r;"; done; } >"$dir/talker.csv"
  left=$listeners
  { echo SEQUENTIAL
    for r in $(seq 1 "$rooms"); do
      for ((n = 0; n < per && left > 0; n++)); do echo "room$r;"; left=$((left - 1)); done
    done
    for ((; left > 0; left--)); do echo "room1;"; done
  } >"$dir/listener.csv"
}
# sipp_start NS LOCAL_IP TARGET DIR NAME LOCAL_PORT MEDIA_PORT OUT ARGS...: one sipp
# instance in NS (scenario DIR/NAME.xml, rooms from DIR/NAME.csv) calling TARGET:5060, run
# from DIR (sipp resolves captures relative to its cwd); output in OUT.out, errors in
# OUT.err -> LAST_PID (also in pids).
sipp_start() {
  local ns=$1 ip=$2 target=$3 dir=$4 name=$5 port=$6 mport=$7 out=$8
  shift 8
  (cd "$dir" && exec ip netns exec "$ns" sipp -sf "$name.xml" -inf "$name.csv" -i "$ip" \
    -p "$port" -mp "$mport" -nostdin -trace_err -error_file "$out.err" \
    "$@" "$target:5060" >"$out.out" 2>&1) &
  LAST_PID=$!
  pids+=("$LAST_PID")
}
# capture_start NS FILE FILTER...: tcpdump on NS's eth0 into FILE (log FILE.log), waiting
# until it listens -> LAST_PID (also in pids; stop it with SIGINT to flush).
capture_start() {
  local ns=$1 file=$2
  shift 2
  ip netns exec "$ns" tcpdump -i eth0 -U --immediate-mode -n -s 1500 -B 16384 -w "$file" "$@" \
    2>"$file.log" &
  LAST_PID=$!
  pids+=("$LAST_PID")
  watch_pid "capture $(basename "$file")" "$LAST_PID"
  wait_until 10 "tcpdump in $ns" grep -q "listening on" "$file.log"
}
