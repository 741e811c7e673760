#!/bin/bash
# PKI for the throwaway cluster: CA, apiserver serving, SA keys, client certs, kubelet serving
set -euo pipefail
P=/tmp/k26/cluster/pki; mkdir -p $P; cd $P
[ -f ca.crt ] || { openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj "/CN=k26-ca" 2>/dev/null; }
issue() { # name subj [san]
  local n=$1 subj=$2 san=${3:-}
  openssl req -newkey rsa:2048 -nodes -keyout $n.key -out $n.csr -subj "$subj" 2>/dev/null
  if [ -n "$san" ]; then
    printf "subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n" "$san" > $n.ext
  else
    printf "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n" > $n.ext
  fi
  openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $n.crt -days 30 -extfile $n.ext 2>/dev/null
  rm -f $n.csr $n.ext
}
issue apiserver "/CN=kube-apiserver" "IP:127.0.0.1,IP:10.226.0.1,IP:10.97.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
issue admin "/O=system:masters/CN=k26-admin"
issue apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
issue kcm "/CN=system:kube-controller-manager"
issue scheduler "/CN=system:kube-scheduler"
issue kubelet "/O=system:nodes/CN=system:node:k26-node"
issue kube-proxy "/CN=system:kube-proxy"
issue kubelet-serving "/CN=k26-node" "IP:127.0.0.1,IP:10.226.0.1,DNS:k26-node,DNS:localhost"
openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
K=/tmp/k26/cluster/kubeconfigs; mkdir -p $K
for u in admin kcm scheduler kubelet kube-proxy; do
cat > $K/$u.yaml <<EOK
apiVersion: v1
kind: Config
clusters:
- name: k26
  cluster: {server: "https://${K26_API_ADDR:-10.226.0.1}:16443", certificate-authority: $P/ca.crt}
users:
- name: $u
  user: {client-certificate: $P/$u.crt, client-key: $P/$u.key}
contexts:
- name: k26
  context: {cluster: k26, user: $u}
current-context: k26
EOK
done
chmod 600 $P/*.key $K/*.yaml
ls $P $K
