# phase NAME COMMAND...: run a quiet COMMAND as one phase of `make setup`, its output kept in a log,
# and say at least every PHASE_INTERVAL seconds how long it has run and what it last logged.
PHASE_INTERVAL=${PHASE_INTERVAL:-10}

last_logged() {  # the log's last line worth showing (pip's warnings about absent local indexes are not)
  grep -v -e '^WARNING: Location' -e '^[[:space:]]*$' "$1" | tail -n 1 | cut -c1-110
}

phase() {
  local name=$1 start=$SECONDS log pid status next said
  shift
  log=$(mktemp)
  printf '==> %s\n' "$name"
  "$@" >"$log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    next=$((SECONDS + PHASE_INTERVAL))
    while [ "$SECONDS" -lt "$next" ] && kill -0 "$pid" 2>/dev/null; do sleep 1; done
    if kill -0 "$pid" 2>/dev/null; then
      said=$(last_logged "$log" || true)
      printf '    still %s (%d s): %s\n' "$name" $((SECONDS - start)) "${said:-nothing logged yet}"
    fi
  done
  wait "$pid" && status=0 || status=$?
  if [ "$status" -ne 0 ]; then
    printf 'setup: %s failed (exit %d) after %d s; its last lines:\n' "$name" "$status" $((SECONDS - start)) >&2
    grep -v '^WARNING: Location' "$log" | tail -n 15 >&2 || true
  else
    printf '    %s: done in %d s\n' "$name" $((SECONDS - start))
  fi
  rm -f "$log"
  return "$status"
}
