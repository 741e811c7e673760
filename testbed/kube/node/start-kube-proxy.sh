#!/bin/bash
nohup setsid /tmp/k26/bin/kube-proxy --config=/tmp/k26/kube-proxy-config.yaml --v=2 > /tmp/k26/logs/kube-proxy.log 2>&1 < /dev/null &
echo $! > /tmp/k26/kube-proxy.pid
