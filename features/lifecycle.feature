Feature: Lifecycle
  Whoever starts a process stops it: a hive stops the workers it started, `rbee up` stops
  everything it started, and a hive stops the on-demand workers nobody uses any more.

  Scenario: Stopping a hive stops every worker it started
    Given a cluster whose hive keeps 1 worker of "rbee-tiny"
    And the hive started one more worker of "rbee-tiny" on request
    When the hive receives SIGTERM
    Then the hive stops its 2 workers and exits within 15 seconds
    And none of its 2 worker processes is left running
    And the queen routes to none of its workers

  Scenario: Ctrl+C on rbee up leaves nothing running
    Given a cluster started with "rbee up" from a spec placing one worker of "tiny"
    And a client got a completion of "tiny" from it
    When the user presses Ctrl+C
    Then rbee up exits with status 0 and says "nothing left running"
    And none of the processes it started is left running

  Scenario: An on-demand worker idle for too long is stopped, a placed worker is not
    Given a cluster whose hive keeps 1 worker of "rbee-tiny", also holds "rbee-tiny-on-demand", and stops on-demand workers idle for 1.5 seconds
    When a client asks for a completion of "rbee-tiny-on-demand"
    Then the hive started a worker of "rbee-tiny-on-demand" on demand, which served it
    And within 10 seconds the on-demand worker is stopped and its process is gone
    And the queen routes to no worker of "rbee-tiny-on-demand" any more
    And the placed worker of "rbee-tiny" is still idle in the same process after more than 1.5 seconds
    And a client asking for a completion of "rbee-tiny" is served by it
