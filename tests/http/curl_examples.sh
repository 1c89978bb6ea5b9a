#!/usr/bin/env bash
# tests/http/curl_examples.sh — the curl examples of the README, exactly as printed there.
# tests/http/curl_test.py runs each block (a "# example: NAME" line, then the command up to the
# next blank line) against a live server and checks its output. To try them by hand:
#   build/sampan serve -m ../shared/models/stories260K.gguf --port 8080 &
#   tests/http/curl_examples.sh
URL=${URL:-http://127.0.0.1:8080}

# example: health
curl -s $URL/health

# example: models
curl -s $URL/v1/models

# example: completion
curl -s $URL/v1/completions -H "Content-Type: application/json" \
  -d '{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 64, "temperature": 0}'

# example: completion-stream
curl -sN $URL/v1/completions -H "Content-Type: application/json" \
  -d '{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0, "stream": true}'

# example: chat
curl -s $URL/v1/chat/completions -H "Content-Type: application/json" \
  -d '{"model": "stories260K", "messages": [{"role": "system", "content": "You tell short stories."}, {"role": "user", "content": "Tell me about a cat."}], "max_tokens": 32}'

# example: chat-stream
curl -sN $URL/v1/chat/completions -H "Content-Type: application/json" \
  -d '{"model": "stories260K", "messages": [{"role": "user", "content": "Once upon a time"}], "max_tokens": 16, "stream": true, "stream_options": {"include_usage": true}}'

# example: metrics
curl -s $URL/metrics | grep -E '^sampan_(requests_total|tokens_out_total|kv_blocks_used) '

# example: bad-request
curl -s -w '\nHTTP %{http_code}\n' $URL/v1/completions -H "Content-Type: application/json" \
  -d '{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 0}'

# example: api-key
curl -s $URL/v1/models -H "Authorization: Bearer $SAMPAN_API_KEY"
