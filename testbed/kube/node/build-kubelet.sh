#!/bin/bash
# build kubelet (and optionally more cmds) v1.35.4 from Go modules; nice 19, -p 1
source /tmp/k26/goenv.sh
cd /tmp/k26/kmod
mkdir -p /tmp/k26/bin
kver=v1.35.4; vpkg=k8s.io/component-base/version
cmds=("$@"); [ ${#cmds[@]} -eq 0 ] && cmds=(kubelet)
for c in "${cmds[@]}"; do
  s=$(date +%s)
  echo "$(date -u +%T) building $c" 
  /usr/bin/time -v nice -n 19 go build -p 1 -trimpath -ldflags="-s -w -X $vpkg.gitVersion=$kver -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=35 -X $vpkg.gitTreeState=clean" -o /tmp/k26/bin/ k8s.io/kubernetes/cmd/$c || exit 1
  echo "$(date -u +%T) $c built in $(( $(date +%s) - s ))s"
done
