# bench/common.sh: helpers sourced by the pull benchmarks (bench/pull*.sh).

# unknown_argument SCRIPT ARG: the usage error every benchmark gives.
unknown_argument() {
  echo "$1: unknown argument $2" >&2
  exit 2
}

# require_cfsctl SCRIPT BUILD_DIR: sets cfsctl to BUILD_DIR/bin/cfsctl, or exits naming it.
require_cfsctl() {
  cfsctl=$2/bin/cfsctl
  [ -x "$cfsctl" ] || { echo "$1: $cfsctl not built" >&2; exit 1; }
}

# parse_options SCRIPT "NAME..." ARGS...: each --NAME VALUE in ARGS sets the shell variable
# NAME (dashes become underscores); anything else is a usage error.
parse_options() {
  local script=$1 names=" $2 " opt
  shift 2
  while [ $# -gt 0 ]; do
    opt=${1#--}
    case "$names" in
      *" $opt "*) ;;
      *) unknown_argument "$script" "$1" ;;
    esac
    [ $# -ge 2 ] || { echo "$script: $1 needs a value" >&2; exit 2; }
    printf -v "${opt//-/_}" '%s' "$2"
    shift 2
  done
}

# start_registry SCRIPT DIR: Debian's docker-registry serving DIR/storage on 127.0.0.1 at a
# free port in 15000-15999, logging to DIR/registry.log; sets port and registry_pid (the
# caller stops it by that pid) and returns once it answers /v2/.
start_registry() {
  local script=$1 dir=$2 p
  port=""
  for _ in $(seq 100); do
    p=$((15000 + RANDOM % 1000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
  done
  [ -n "$port" ] || { echo "$script: no free port" >&2; exit 1; }
  cat > "$dir/config.yml" <<CONF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/storage
http:
  addr: 127.0.0.1:$port
CONF
  docker-registry serve "$dir/config.yml" > "$dir/registry.log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$port/v2/" > /dev/null && break
    sleep 0.05
  done
}
