#!/bin/bash
# start containerd 1.6.20 (Debian) with its own root/state/socket under /tmp/k26
cd /tmp/k26
nohup setsid containerd --config /tmp/k26/containerd.toml --log-level info > /tmp/k26/logs/containerd.log 2>&1 < /dev/null &
echo $! > /tmp/k26/containerd.pid
