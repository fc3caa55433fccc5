// Command scheduler-plugins is kube-scheduler with the Coscheduling plugin of
// sigs.k8s.io/scheduler-plugins registered: the second scheduler of the test bed's gang tests.
// It is upstream's cmd/scheduler with only that plugin (the others pull in dependencies aidc
// does not use); upstream code is built as published.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // rest client metrics, as upstream registers them
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as upstream registers it
	"k8s.io/kubernetes/cmd/kube-scheduler/app"

	// the plugin's configuration types (CoschedulingArgs) in the scheduler's config scheme
	_ "sigs.k8s.io/scheduler-plugins/apis/config/scheme"
	"sigs.k8s.io/scheduler-plugins/pkg/coscheduling"
)

func main() {
	command := app.NewSchedulerCommand(app.WithPlugin(coscheduling.Name, coscheduling.New))
	os.Exit(cli.Run(command))
}
