#!/bin/bash
source /tmp/k26/goenv.sh
cd /tmp/k26/coredns-mod
s=$(date +%s)
CGO_ENABLED=0 /usr/bin/time -v nice -n 19 go build -p 1 -trimpath -ldflags="-s -w" -o /tmp/k26/bin/coredns github.com/coredns/coredns || exit 1
echo "$(date -u +%T) coredns built in $(( $(date +%s) - s ))s"
