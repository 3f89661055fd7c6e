#!/usr/bin/env bash
# Tears the lab down: deletes every ss-* namespace (their veths go with them). Idempotent.
set -u
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^ss-'); do
  ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
  ip netns del "$ns"
done
echo "lab down"
