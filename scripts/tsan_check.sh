#!/usr/bin/env bash
# The threaded tests under ThreadSanitizer (see scripts/sanitize_check.sh).
# Usage: scripts/tsan_check.sh
exec bash "$(dirname "$0")/sanitize_check.sh" tsan
