#!/bin/bash
source /tmp/k26/goenv.sh
cd /tmp/k26/kmod136; mkdir -p /tmp/k26/bin136
vpkg=k8s.io/component-base/version; s=$(date +%s)
/usr/bin/time -v nice -n 19 go build -p 1 -trimpath -ldflags="-s -w -X $vpkg.gitVersion=v1.36.3 -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=36 -X $vpkg.gitTreeState=clean" -o /tmp/k26/bin136/ k8s.io/kubernetes/cmd/kubelet || exit 1
echo "$(date -u +%T) kubelet 1.36 built in $(( $(date +%s) - s ))s"
