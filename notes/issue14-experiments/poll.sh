#!/bin/bash
# copy last.pt of a run when its history reaches epoch N
dir=$1 n=$2 dst=$3
while true; do
  if [ -f $dir/history.json ] && python3 -c "import json,sys;h=json.load(open('$dir/history.json'))['history'];sys.exit(0 if len(h)>=$n else 1)" 2>/dev/null; then
    sleep 5; cp $dir/last.pt $dst && cp $dir/history.json $dst.history.json && echo copied && exit 0
  fi
  sleep 10
done
