#!/usr/bin/env bash
# The controller's database boundary (controller/db.h): no controller source but the
# SQLite driver, controller/db_sqlite.c, may name sqlite3 — not its header, its types,
# its functions or its constants. A module that needs the store goes through db_*.
#
#   tests/unit/controller/db_boundary.sh [SOURCE_DIR]
#
# First proves that the check finds a planted use (so it can fail), then checks
# SOURCE_DIR/controller/*.c and *.h. Exit 0 when clean, 1 listing each offending line.
set -euo pipefail
src=${1:-$(cd "$(dirname "$0")/../../.." && pwd)}

# offenders DIR: every line naming sqlite3 in DIR/*.c and DIR/*.h, but db_sqlite.c.
offenders() {
  local dir=$1
  grep -n -E 'sqlite3|SQLITE_' "$dir"/*.c "$dir"/*.h 2>/dev/null |
    grep -v -E "^$dir/db_sqlite\.c:" || true
}

probe=$(mktemp -d /tmp/sp-db-boundary.XXXXXX)
trap 'rm -rf "$probe"' EXIT
printf '#include <sqlite3.h>\n' >"$probe/db_sqlite.c"
printf 'int x(void) { return SQLITE_OK; }\n' >"$probe/planted.c"
printf '/* fine */\n' >"$probe/clean.h"
found=$(offenders "$probe")
if [[ $found != "$probe/planted.c:1:int x(void) { return SQLITE_OK; }" ]]; then
  echo "db_boundary: the check itself is broken (found: ${found:-nothing})" >&2
  exit 1
fi

[[ -f $src/controller/db.h && -f $src/controller/db_sqlite.c ]] ||
  { echo "db_boundary: $src/controller has no db.h/db_sqlite.c" >&2; exit 1; }
found=$(offenders "$src/controller")
if [[ -n $found ]]; then
  echo "db_boundary: only controller/db_sqlite.c may use sqlite3; go through controller/db.h:" >&2
  echo "$found" >&2
  exit 1
fi
count=$(ls "$src"/controller/*.c "$src"/controller/*.h | wc -l)
echo "db_boundary: $count controller sources checked; sqlite3 appears only in db_sqlite.c"
