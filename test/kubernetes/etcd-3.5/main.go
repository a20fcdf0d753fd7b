// etcd 3.5's server binary: in the 3.5 line its main package is the root module go.etcd.io/etcd/v3,
// whose newer tags the module proxy does not serve, so this is that package's whole program.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
