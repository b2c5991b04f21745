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
