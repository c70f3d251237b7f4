Feature: Preflight of hosts and hives
  Before a deploy, rbee probes every host over SSH (rbee.deploy.ssh_check: the code rbee preflight, rbee plan,
  rbee deploy and the pyinfra preflight use): can it be reached (or is it refused, silent), does key
  authentication work, is its host key the known one, how long does a round trip take, and does the host
  have what rbee needs (Linux or macOS, Python 3.11+ with venv, systemd, RAM, disk, GPUs). Before the queen sends work to a hive, the hive must
  answer its health check, speak a compatible version, and report its backends and resources.

  Scenario: A reachable host passes the SSH preflight
    Given the SSH test hosts are up
    When the SSH preflight probes "h1" with the deploy key
    Then "h1" is reachable and accepts the key
    And the measured latency is above 0 ms and below the connect timeout
    And the probe reports Linux with Python 3.11 or newer, the venv module and systemd
    And the probe reports the RAM and free disk of "h1"
    And "h1" has no problem for a cpu deployment needing 256 MiB of RAM and 1 GiB of disk

  Scenario: A host without enough RAM for its models is not fit for the deploy
    Given the SSH test hosts are up
    When the SSH preflight probes "h1" with the deploy key
    Then "h1" is not fit for a cpu deployment needing 1 TiB of RAM, because of its RAM
    And "h1" is not fit for a cuda deployment, because nvidia-smi lists no GPU

  Scenario: The SSH latency to a host is measured
    Given the SSH test hosts are up
    When the SSH preflight measures the latency to "h2" 5 times over one connection
    Then every round trip took more than 0 ms and less than 100 ms
    And the measured latency is above 0 ms and below the connect timeout

  Scenario: A host that is powered off refuses the connection
    Given the SSH test hosts are up
    And host "h3" is powered off
    When the SSH preflight probes "h3" with the deploy key
    Then "h3" is reported unreachable because the connection is refused, with the hint to start sshd

  Scenario: A host whose sshd is stopped refuses the connection
    Given the SSH test hosts are up
    And sshd is stopped on "h2"
    When the SSH preflight probes "h2" with the deploy key
    Then "h2" is reported unreachable because the connection is refused, with the hint to start sshd

  Scenario: A host whose network cable is pulled does not answer
    Given the SSH test hosts are up
    And the network cable of "h3" is pulled
    When the SSH preflight probes "h3" with the deploy key
    Then "h3" is reported unreachable with the hint to check that it is up and on the network

  Scenario: An address where no host answers is unreachable
    Given the SSH test hosts are up
    When the SSH preflight probes a host "ghost" at an address where no host answers
    Then "ghost" is reported unreachable with the hint to check that it is up and on the network

  Scenario: A key the host does not know is refused
    Given the SSH test hosts are up
    When the SSH preflight probes "h2" with a key the host does not know
    Then "h2" is reported as an authentication failure with a hint about the key

  Scenario: A host whose key is not the one in known_hosts is not trusted
    Given the SSH test hosts are up
    And a known_hosts file that records another key for "h1"
    When the SSH preflight probes "h1" checking host keys against that file
    Then "h1" is reported as a host-key mismatch with the hint to remove the old entry

  Scenario: rbee preflight reports every host of a spec in one table
    Given the SSH test hosts are up
    And host "h3" is powered off
    When "rbee preflight --json" runs on a spec of the hosts "h1", "h2" and "h3"
    Then rbee preflight exits 1 and reports "h1" ok, "h2" ok and "h3" unreachable

  Scenario: A running hive answers its health check
    Given a running hive "hive-a"
    When the hive's health is checked
    Then the hive answers "ok" as service "hive" with id "hive-a", the version of this release and API "v1"

  Scenario: A hive of another minor release is refused by the queen
    Given a running queen for the preflight
    When hive "old-box" sends its heartbeat as the next minor release
    Then the queen refuses it with 409 "VERSION_MISMATCH" naming both versions
    And the message says which side to upgrade
    And the queen does not list hive "old-box"

  Scenario: A hive of another patch release is compatible
    Given a running queen for the preflight
    When hive "patched-box" sends its heartbeat as the next patch release
    Then the queen takes the heartbeat and lists hive "patched-box" as "online"

  Scenario: A real hive of this release is accepted by a real queen
    Given a running queen for the preflight
    And a running hive "hive-a" that reports to the queen
    Then the queen lists hive "hive-a" as "online" with the version of this release

  Scenario: A hive reports the backends of its machine
    Given a running hive "hive-a"
    When the hive's capabilities are read
    Then the hive offers the "cpu" backend
    And the hive offers "cuda" exactly when it detects NVIDIA GPUs

  Scenario: A hive reports the resources of its machine
    Given a running hive "hive-a"
    When the hive's capabilities are read
    Then the hive reports the RAM, disk and CPU count of this machine
    And the hive's free RAM is enough for a worker of a 1 MiB model
