#!/bin/bash
# Tear the k26 node + control plane down: pods deleted through the API first (so CNI DEL runs), then processes,
# then only the iptables rules/chains named KUBE-* / CNI-* (Podman's NETAVARK-* are left alone), bridge, sysctls.
cd /tmp/k26
export KUBECONFIG=/tmp/k26/cluster/kubeconfigs/admin.yaml
if [ -f kubelet.pid ] && kill -0 $(cat kubelet.pid) 2>/dev/null; then
  timeout 20 bin/kubectl delete deploy,svc,pod --all -A --grace-period=1 --wait=false >/dev/null 2>&1
  timeout 20 bin/kubectl delete svc -n default --all >/dev/null 2>&1
  for i in $(seq 40); do n=$(ctr -a /tmp/k26/containerd.sock -n k8s.io tasks ls -q 2>/dev/null | wc -l); [ "$n" = 0 ] && break; sleep 0.5; done
  echo "tasks left: $n"
fi
stop() { local f=/tmp/k26/$1.pid; [ -f $f ] || return; local p=$(cat $f); kill $p 2>/dev/null; for i in $(seq 20); do kill -0 $p 2>/dev/null || break; sleep 0.5; done; kill -9 $p 2>/dev/null; rm -f $f; }
for n in coredns-host kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop $n; done
# leftover sandboxes (e.g. when the kubelet was already gone): remove through ctr (no CNI DEL then)
C="ctr -a /tmp/k26/containerd.sock -n k8s.io"
for t in $($C tasks ls -q 2>/dev/null); do $C tasks kill -s KILL $t >/dev/null 2>&1; done; sleep 1
for t in $($C tasks ls -q 2>/dev/null); do $C tasks delete -f $t >/dev/null 2>&1; done
for c in $($C containers ls -q 2>/dev/null); do $C containers rm $c >/dev/null 2>&1; done
stop containerd
# shims of this containerd (their -address is our socket)
for p in $(pgrep -f "containerd-shim-runc-v2 .*-address /tmp/k26/containerd.sock"); do kill $p; done
# kube-proxy's own cleanup, then any KUBE-*/CNI-* leftovers, table by table
[ -x bin/kube-proxy ] && bin/kube-proxy --cleanup >/dev/null 2>&1
for ipt in iptables ip6tables; do for t in nat filter mangle; do
  $ipt -t $t -S 2>/dev/null | grep -E '^-A (PREROUTING|INPUT|OUTPUT|POSTROUTING|FORWARD) .*-j (KUBE-|CNI-)' | sed 's/^-A/-D/' | while read -r r; do eval "$ipt -t $t $r"; done
  for ch in $($ipt -t $t -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/{print $2}'); do $ipt -t $t -F $ch; done
  for ch in $($ipt -t $t -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/{print $2}'); do $ipt -t $t -X $ch; done
done; done
# netns mounts under containerd's state dir, veths, the bridge, IPAM state
grep -o "/tmp/k26/containerd-state[^ ]*netns[^ ]*" /proc/self/mountinfo | sort -u | while read -r m; do umount -l "$m"; done
for v in $(ip -o link show master k26br0 2>/dev/null | awk -F'[:@ ]+' '{print $2}'); do ip link del "$v"; done
ip link del k26br0 2>/dev/null
rm -rf /tmp/k26/cni/ipam
# sysctls the node changed (values read before it ran: see sysctl-before.txt / report)
sysctl -qw net.ipv4.conf.all.route_localnet=0
if pgrep -x conmon >/dev/null; then echo "podman containers running: ip_forward left at 1"; else sysctl -qw net.ipv4.ip_forward=${K26_IP_FORWARD_RESTORE:-0}; fi
# the kubelet's shared bind mount of its root dir, and the (empty) cgroups it and containerd made
while grep -q " /tmp/k26/kubelet " /proc/self/mountinfo; do umount /tmp/k26/kubelet || break; done
for h in /sys/fs/cgroup/*/; do for d in kubepods k8s.io; do [ -d "$h$d" ] && find "$h$d" -depth -type d -exec rmdir {} \; 2>/dev/null; done; done
echo cleaned
