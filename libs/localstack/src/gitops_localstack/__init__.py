"""Starts the real local stack: Apache Kafka (KRaft) and a Kubernetes control plane with kwok.

Nothing here is a stand-in: the broker is Apache Kafka from Maven Central jars, the control
plane is etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from the Go
module proxy, with kwok playing the kubelet. `make up`, `make run` and the test fixtures all
start the stack through this package, so what the tests prove is what users run.
"""
