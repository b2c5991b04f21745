# bash completion for cfsctl (and its drop-in names mkcomposefs / composefs-info).
#
# Subcommands and options are read from the binary's own --help output, so the completion
# never lists an option the installed cfsctl does not have. Tag, image and stream names come
# from the repository given with --repo.

# Prints "SUBCOMMANDS<TAB>name ..." and "OPTION<TAB>name<TAB>takes-value" lines for the
# command path in "$@" (e.g. `oci pull`), parsed from CLI11's help layout.
_cfsctl_help_words() {
  local cmd=$1
  shift
  "$cmd" "$@" --help 2>/dev/null | awk '
    /^Subcommands:/ { section = "sub"; next }
    /^(Options|Positionals):/ { section = ($1 == "Options:") ? "opt" : "pos"; next }
    /^[^ ]/ { section = "" }
    section == "sub" && /^  [a-z]/ { name = $1; sub(/,$/, "", name); print "SUB\t" name }
    section == "opt" && /^  -/ {
      # "  --repo DIR      text": a value name follows the option after one space; a
      # description follows after a run of spaces or on the next line.
      spec = $1
      rest = substr($0, index($0, spec) + length(spec))
      value = (rest ~ /^ [^ ]/) ? 1 : 0
      n = split(spec, names, ",")
      for (i = 1; i <= n; i++) if (names[i] ~ /^-/) print "OPT\t" names[i] "\t" value
    }'
}

# Tags of the repository's OCI images (first column of `oci images`, header skipped).
_cfsctl_tags() {
  "$1" --repo "$2" oci images 2>/dev/null | awk -F '\t' 'NR > 1 { print $1 }'
}

# Image ids and image ref names (`images`: one line per id followed by its refs).
_cfsctl_images() {
  "$1" --repo "$2" images 2>/dev/null | tr ' ' '\n'
}

# Stream refs below streams/refs, as `cat` takes them.
_cfsctl_streams() {
  local refs="$1/streams/refs"
  [ -d "$refs" ] || return 0
  (cd "$refs" && find . -mindepth 1 \( -type l -o -type f \) -printf '%P\n' 2>/dev/null)
}

_cfsctl() {
  local cur prev words cword
  if declare -F _init_completion >/dev/null; then
    _init_completion || return
  else
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD - 1]}
    words=("${COMP_WORDS[@]}")
    cword=$COMP_CWORD
  fi
  local cmd=${words[0]}
  local self=${cmd##*/}

  # Walk the words typed so far: collect the subcommand path and the --repo value, and skip
  # the values of options that take one.
  local -a path=()
  local repo="" i word line kind name takes
  local -A takes_value=()
  local subs=""
  _cfsctl_load() {
    subs="" takes_value=()
    while IFS=$'\t' read -r kind name takes; do
      case $kind in
        SUB) subs+="$name " ;;
        OPT) takes_value[$name]=$takes ;;
      esac
    done < <(_cfsctl_help_words "$cmd" "${path[@]}")
  }
  if [ "$self" = mkcomposefs ] || [ "$self" = composefs-info ]; then
    path=()
  fi
  _cfsctl_load
  local positionals=0
  for ((i = 1; i < cword; i++)); do
    word=${words[i]}
    case $word in
      --repo=*) repo=${word#--repo=} ;;
      --repo) repo=${words[i + 1]}; ((i++)) ;;
      --*=*) ;;
      -*)
        if [ "${takes_value[$word]:-0}" = 1 ]; then ((i++)); fi
        ;;
      *)
        if [[ " $subs " == *" $word "* ]]; then
          path+=("$word")
          positionals=0
          _cfsctl_load
        else
          ((positionals++))
        fi
        ;;
    esac
  done

  # The value of an option.
  if [[ $prev == -* && "${takes_value[$prev]:-0}" = 1 ]] || [ "$prev" = --repo ]; then
    case $prev in
      --repo|--bootdir|--basedir|--digest-store) COMPREPLY=($(compgen -d -- "$cur")) ;;
      --root) [ -n "$repo" ] && COMPREPLY=($(compgen -W "$(_cfsctl_images "$cmd" "$repo")" -- "$cur")) ;;
      --hash) COMPREPLY=($(compgen -W "sha256 sha512" -- "$cur")) ;;
      --algorithm) COMPREPLY=($(compgen -W "fsverity-sha256-12 fsverity-sha512-12" -- "$cur")) ;;
      --xattrs) COMPREPLY=($(compgen -W "allowlist-only keep-user-xattrs" -- "$cur")) ;;
      *) COMPREPLY=() ;;
    esac
    return
  fi

  if [[ $cur == -* ]]; then
    local opts="${!takes_value[*]}"
    [ ${#path[@]} -eq 0 ] && [ "$self" = cfsctl ] && opts+=" --repo"
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    return
  fi

  # A subcommand, where the command has them and none was given yet at this level.
  if [ -n "$subs" ] && [ "$positionals" -eq 0 ]; then
    COMPREPLY=($(compgen -W "$subs" -- "$cur"))
    return
  fi

  # Positional arguments that name something in the repository.
  local joined="${path[*]}"
  case "$joined" in
    "oci inspect"|"oci untag"|"oci image-id"|"oci prepare-boot"|"oci fsck"|"oci compute-id"|"oci dump")
      [ "$positionals" -eq 0 ] && [ -n "$repo" ] &&
        COMPREPLY=($(compgen -W "$(_cfsctl_tags "$cmd" "$repo")" -- "$cur"))
      ;;
    "oci tag")
      [ "$positionals" -eq 0 ] && [ -n "$repo" ] &&
        COMPREPLY=($(compgen -W "$(_cfsctl_tags "$cmd" "$repo")" -- "$cur"))
      ;;
    "oci mount")
      if [ "$positionals" -eq 0 ] && [ -n "$repo" ]; then
        COMPREPLY=($(compgen -W "$(_cfsctl_tags "$cmd" "$repo")" -- "$cur"))
      else
        COMPREPLY=($(compgen -d -- "$cur"))
      fi
      ;;
    "image-objects")
      [ -n "$repo" ] && COMPREPLY=($(compgen -W "$(_cfsctl_images "$cmd" "$repo")" -- "$cur"))
      ;;
    "cat")
      [ -n "$repo" ] && COMPREPLY=($(compgen -W "$(_cfsctl_streams "$repo")" -- "$cur"))
      ;;
    "oci pull")
      [ "$positionals" -eq 0 ] &&
        COMPREPLY=($(compgen -W "oci: oci-archive: docker-archive: docker://" -- "$cur"))
      [[ $cur == oci:* || $cur == oci-archive:* || $cur == docker-archive:* ]] && {
        local prefix=${cur%%:*}: rest=${cur#*:}
        COMPREPLY=($(compgen -f -- "$rest" | sed "s|^|$prefix|"))
        compopt -o nospace 2>/dev/null
      }
      ;;
    *)
      COMPREPLY=($(compgen -f -- "$cur"))
      ;;
  esac
}

complete -F _cfsctl cfsctl mkcomposefs composefs-info
