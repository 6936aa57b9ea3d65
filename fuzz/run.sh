#!/bin/sh
# Seeds the corpus of one fuzz target from the HL7 corpus and runs it for a while.
#
#   fuzz/run.sh TARGET SECONDS [LIBFUZZER_FLAGS...]
#
# TARGET is one of mllp, parse, extract, ack. The seeds come from ${HL7_CORPUS}, by default
# ../../shared/corpus relative to this directory; they are skipped when it does not exist.
# For mllp each file is wrapped in an MLLP frame behind the target's chunk-size header.
set -eu

if [ $# -lt 2 ]; then
    echo "usage: $0 TARGET SECONDS [LIBFUZZER_FLAGS...]" >&2
    exit 2
fi
target=$1
seconds=$2
shift 2

cd "$(dirname "$0")"
src=${HL7_CORPUS:-../../shared/corpus}
dir=corpus/$target
mkdir -p "$dir"

if [ -d "$src" ]; then
    n=0
    stream=$(mktemp)
    for f in "$src"/*.hl7; do
        [ -f "$f" ] || continue
        name=seed-$(basename "$f")
        if [ "$target" = mllp ]; then
            # Header 0x01: two chunk sizes follow, 0x07 and 0x3f, i.e. reads of 8 and 64 bytes.
            { printf '\001\007\077\013'; cat "$f"; printf '\034\015'; } >"$dir/$name"
            # Small messages also go back to back into one stream, some noise between them.
            if [ "$(wc -c <"$f")" -le 256 ]; then
                { printf '\013'; cat "$f"; printf '\034\015\n'; } >>"$stream"
            fi
        else
            cp "$f" "$dir/$name"
        fi
        n=$((n + 1))
    done
    if [ "$target" = mllp ] && [ -s "$stream" ]; then
        { printf '\002\000\017\377'; cat "$stream"; } >"$dir/seed-stream"
    fi
    rm -f "$stream"
    echo "seeded $dir with $n files from $src" >&2
else
    echo "no corpus at $src; starting from $dir as it is" >&2
fi

exec cargo +nightly fuzz run "$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 "$@"
