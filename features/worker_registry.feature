Feature: Worker registries of the hive and the queen
  A hive keeps a registry of the workers on its machine; the queen learns every hive's workers from
  the hives' heartbeats. A worker id belongs to one live worker at a time: a second worker claiming it
  is refused with WORKER_ALREADY_REGISTERED. State changes follow the worker life cycle, and the
  workers of a hive that stops sending heartbeats turn stale, then are dropped.

  Scenario: The queen registers the workers a hive reports
    Given a queen registry that marks hives stale after 15 seconds without a heartbeat
    When hive "gpu-box" reports worker "w-1" idle and worker "w-2" loading for model "tinyllama-q4"
    Then the queen lists workers "w-1, w-2" on hive "gpu-box"
    And only worker "w-1" takes requests for "tinyllama-q4"

  Scenario: The queen follows a worker's state through the heartbeats
    Given a queen registry that marks hives stale after 15 seconds without a heartbeat
    When hive "gpu-box" reports worker "w-1" in state "loading"
    Then the queen shows worker "w-1" as "loading", taking no requests
    When hive "gpu-box" reports worker "w-1" in state "idle"
    Then the queen shows worker "w-1" as "idle", taking requests
    When hive "gpu-box" reports worker "w-1" in state "busy"
    Then the queen shows worker "w-1" as "busy", taking requests
    When hive "gpu-box" reports worker "w-1" in state "draining"
    Then the queen shows worker "w-1" as "draining", taking no requests

  Scenario Outline: The hive's registry follows the worker life cycle
    Given the hive's registry holds worker "w-1" in state "<from>"
    When the hive moves worker "w-1" to "<to>"
    Then the move is <verdict>

    Examples:
      | from     | to       | verdict  |
      | loading  | idle     | accepted |
      | idle     | busy     | accepted |
      | busy     | idle     | accepted |
      | idle     | draining | accepted |
      | draining | stopped  | accepted |
      | loading  | crashed  | accepted |
      | crashed  | loading  | accepted |
      | idle     | loading  | refused  |
      | draining | idle     | refused  |
      | stopped  | idle     | refused  |

  Scenario: A hive that misses its heartbeats turns stale, then is dropped
    Given a queen registry that marks hives stale after 15 seconds without a heartbeat
    And hive "gpu-box" reports worker "w-1" idle and worker "w-2" loading for model "tinyllama-q4"
    When 16 seconds pass without a heartbeat from "gpu-box"
    Then hive "gpu-box" is "stale"
    And no worker takes requests for "tinyllama-q4"
    When hive "gpu-box" reports worker "w-1" in state "idle"
    Then hive "gpu-box" is "online"
    When 31 seconds pass without a heartbeat from "gpu-box"
    Then the queen knows neither hive "gpu-box" nor worker "w-1"

  Scenario: A worker missing from its hive's next heartbeat is removed
    Given a queen registry that marks hives stale after 15 seconds without a heartbeat
    And hive "gpu-box" reports worker "w-1" idle and worker "w-2" loading for model "tinyllama-q4"
    When hive "gpu-box" reports only worker "w-2"
    Then the heartbeat removed worker "w-1"
    And the queen lists workers "w-2" on hive "gpu-box"

  Scenario: A worker stopped through its hive leaves the hive's and the queen's registries
    Given a running queen
    And a running hive with the tiny model "rbee-tiny" that reports to the queen
    And a worker of "rbee-tiny" started by the hive is idle in both registries
    When the worker is removed through the hive
    Then the hive no longer lists the worker
    And the queen no longer lists the worker
    And the worker's process is gone

  Scenario: A second worker announcing an id the hive already runs is refused
    Given a running hive that checks its workers' health every 30 seconds
    And an external worker "ext-1" announced itself to the hive from port 41001
    When another worker announces itself as "ext-1" from port 41002
    Then the hive refuses with 409 "WORKER_ALREADY_REGISTERED" naming port 41001 and port 41002
    And the hive still lists worker "ext-1" as "idle" at port 41001
    When the worker at port 41001 announces itself again as "ext-1"
    Then the hive accepts the announce

  Scenario: The queen refuses a worker id that another live hive already reports
    Given a running queen
    And hive "box-a" sent a heartbeat with worker "w-1" idle
    When hive "box-b" sends a heartbeat with workers "w-1" and "w-2" idle
    Then the queen takes the heartbeat of "box-b" but rejects worker "w-1" as "WORKER_ALREADY_REGISTERED" owned by "box-a"
    And the queen lists worker "w-1" on hive "box-a" and worker "w-2" on hive "box-b"
