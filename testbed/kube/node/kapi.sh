#!/bin/bash
# kapi METHOD PATH [json-file|-]  : raw admin request to the k26 apiserver
P=/tmp/k26/cluster/pki; m=$1; p=$2; d=${3:-}
if [ -n "$d" ]; then curl -s --cacert $P/ca.crt --cert $P/admin.crt --key $P/admin.key -X $m -H 'Content-Type: application/yaml' --data-binary @$d https://10.226.0.1:16443$p
else curl -s --cacert $P/ca.crt --cert $P/admin.crt --key $P/admin.key -X $m https://10.226.0.1:16443$p; fi
