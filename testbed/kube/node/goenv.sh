export PATH=/usr/local/go/bin:$PATH
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
export GOMODCACHE=$HOME/.cache/k26/gomod GOCACHE=$HOME/.cache/k26/go-build
# read the project's module cache read-only first, then the Go module proxy
export GOPROXY=file:///root/go/pkg/mod/cache/download,https://proxy.golang.org
