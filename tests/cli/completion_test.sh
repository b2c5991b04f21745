#!/bin/bash
# The bash completion for cfsctl, driven as bash drives it: COMP_WORDS/COMP_CWORD set, the
# completion function called, COMPREPLY read. Uses the built cfsctl and a real repository
# holding a pulled OCI image, a named image and a stream ref.
#   completion_test.sh SOURCE_DIR BIN_DIR
set -euo pipefail
src=$1
bin=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

# shellcheck source=../../tools/completion/cfsctl.bash
source "$src/tools/completion/cfsctl.bash"
PATH="$bin:$PATH"

# complete WORD... : the completions offered for the last word.
complete_words() {
  COMP_WORDS=("$@")
  COMP_CWORD=$(($# - 1))
  COMP_LINE="$*"
  COMP_POINT=${#COMP_LINE}
  COMPREPLY=()
  _cfsctl
  printf '%s\n' "${COMPREPLY[@]}" | sort
}

expect() {
  local what=$1 expected=$2 got=$3
  if [ "$got" != "$expected" ]; then
    echo "FAIL $what"
    echo "  expected: $(echo "$expected" | tr '\n' ' ')"
    echo "  got:      $(echo "$got" | tr '\n' ' ')"
    failures=$((failures + 1))
  else
    echo "ok   $what"
  fi
}

expect_has() {
  local what=$1 needle=$2 got=$3
  if grep -qxF -- "$needle" <<<"$got"; then
    echo "ok   $what"
  else
    echo "FAIL $what: '$needle' not offered; got: $(echo "$got" | tr '\n' ' ')"
    failures=$((failures + 1))
  fi
}

repo=$work/repo
cfsctl --repo "$repo" init --insecure >/dev/null
mkdir -p "$work/tree/etc"
echo hello >"$work/tree/etc/motd"
cfsctl --repo "$repo" create-image "$work/tree" base-image >/dev/null
"$src/tests/oci/make-sample-layout.sh" "$work/layout" --layers 1 --size-mib 1 >/dev/null
cfsctl --repo "$repo" oci pull -q "oci:$work/layout" sample-tag >/dev/null
cfsctl --repo "$repo" oci tag sample-tag other-tag >/dev/null

expect "top-level subcommands" "$(printf '%s\n' cat compute-id compute-karg create-dumpfile create-image dump dump-files fsck gc image-objects images import-image init mount oci transaction | sort)" \
  "$(complete_words cfsctl '' | grep -vx -e composefs-info -e mkcomposefs)"
expect "prefix of a subcommand" "compute-id
compute-karg
create-dumpfile
create-image" "$(complete_words cfsctl c | grep -v '^cat$')"
expect "oci subcommands after --repo" "$(cfsctl oci --help | awk '/^Subcommands:/{s=1;next} s&&/^  [a-z]/{print $1}' | sort)" \
  "$(complete_words cfsctl --repo "$repo" oci '')"
expect_has "options of oci pull" "--bootable" "$(complete_words cfsctl --repo "$repo" oci pull --)"
expect_has "option values: --xattrs" "keep-user-xattrs" \
  "$(complete_words cfsctl --repo "$repo" oci pull --xattrs '')"
expect "tags for oci inspect" "other-tag
sample-tag" "$(complete_words cfsctl --repo "$repo" oci inspect '')"
expect "tags by prefix for oci mount" "sample-tag" \
  "$(complete_words cfsctl --repo "$repo" oci mount sam)"
expect "--repo=DIR form" "sample-tag" "$(complete_words cfsctl --repo="$repo" oci image-id s)"
expect_has "image refs for gc --root" "base-image" \
  "$(complete_words cfsctl --repo "$repo" gc --root '')"
expect "no tags without a repository" "" "$(complete_words cfsctl oci inspect '')"
expect "an option's value is skipped: the next word is SOURCE" "oci-archive:" \
  "$(complete_words cfsctl --repo "$repo" oci pull --threads 2 oci-a)"

if [ "$failures" -ne 0 ]; then
  echo "completion_test: $failures failed"
  exit 1
fi
echo "completion_test: all passed"
