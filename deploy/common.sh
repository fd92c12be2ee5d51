# shellcheck shell=bash
# Printing and reading: every command is shown before it runs; reads tell "absent" from "failed".

# Progress goes to the console; with --output json, stdout carries only the summary.
if [[ $OUTPUT == json ]]; then exec 3>&2; else exec 3>&1; fi
SECRET_VALUES=()  # values show() masks: the proxy secret reaches gcloud, never the console

say() { printf '\n== %s\n' "$*" >&3; }

show() {
  local line secret
  line=$(printf ' %q' "$@")
  for secret in "${SECRET_VALUES[@]}"; do line=${line//"$secret"/***}; done
  printf '+%s\n' "$line" >&3
}

# run CMD...: print it, and run it unless --dry-run.
run() {
  show "$@"
  [[ $DRY_RUN == 1 ]] || "$@" >&3
}

# read_state CMD...: the command's output; any failure stops the script, because a read that
# fails for a reason other than "not there" (a missing permission, a wrong region) must not be
# taken for "absent". Under --dry-run nothing is read and the answer is empty.
read_state() {
  show "$@"
  [[ $DRY_RUN == 1 ]] && return 0
  local output error_file
  error_file=$(mktemp)
  # gcloud's compute lists exit 0 on a refused request and only warn "Some requests did not succeed".
  if ! output=$("$@" 2>"$error_file") || grep -q 'Some requests did not succeed' "$error_file"; then
    cat "$error_file" >&2
    rm -f "$error_file"
    printf 'deploy.sh: reading the project failed (above); stopped before changing anything else\n' >&2
    exit 3
  fi
  rm -f "$error_file"
  printf '%s' "$output"
}

# present NAME LIST-CMD...: does the list hold a resource named NAME? Lists answer "none" with
# success, so absence is never inferred from an error. --dry-run assumes absent when deploying
# (every create is printed) and present when destroying (every delete is printed).
present() {
  local name=$1 listed
  shift
  if [[ $DRY_RUN == 1 ]]; then
    show "$@" --format='value(name.basename())'
    [[ $DESTROY == 1 ]]
    return
  fi
  listed=$(read_state "$@" --format='value(name.basename())') || exit 3
  grep -qxF -- "$name" <<<"$listed"
}

# digest: a short hash of standard input, to record what a resource was built from.
digest() { sha256sum | cut -c1-16; }
