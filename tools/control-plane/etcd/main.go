// Command etcd is the upstream etcd server (go.etcd.io/etcd/server/v3/etcdmain), built from the
// published server module so kasbridge's tests can run a real etcd behind kube-apiserver.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
