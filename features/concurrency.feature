Feature: Concurrency
  Many things happen at once in a cluster: workers start together, hives report together,
  clients ask together, models are registered together. Nothing is lost, counted twice,
  torn apart or over-committed.

  Scenario: Ten workers that start at once are each registered exactly once
    Given a queen and a hive without workers
    When 10 workers of "rbee-tiny" start at the same time and announce themselves to the hive
    Then the hive lists the 10 workers, each exactly once and idle
    And the queen lists the 10 workers, each exactly once and routable
    When 10 clients send the workers' ready callbacks again at the same instant, 5 times each
    Then every callback is accepted
    And the hive still lists the 10 workers, each exactly once and none restarted
    And the hive's worker table holds one row per worker

  Scenario: Heartbeats of many hives racing at the queen leave a consistent registry
    Given a queen without hives
    When 8 hives send 25 heartbeats each at the same time, every one replacing their 3 workers, while clients read the queen's worker list
    Then every read showed the workers of each hive from one single heartbeat
    And the queen lists 24 workers, each exactly once, as the last heartbeat of their hive said

  Scenario: More clients than slots race for one worker
    Given a cluster serving "rbee-tiny" on one worker with 2 slots
    When 6 clients ask the worker directly for a stream of 400 tokens at the same instant
    Then exactly 2 streams start and 4 clients get 503 "ALL_SLOTS_BUSY" with Retry-After
    And the 2 streams complete with 400 tokens
    And the worker never ran more than 2 generations at once

  Scenario: More requests than slots wait in the queen's queue instead of overloading the worker
    Given a cluster serving "rbee-tiny" on one worker with 2 slots
    When 6 clients stream a completion of 200 tokens through the queen at the same instant
    Then all 6 streams complete with 200 tokens
    And the worker never ran more than 2 generations at once
    And some requests waited in the queen's queue

  Scenario: Many clients registering models into one hive catalog at once
    Given a hive without a queen and with an empty catalog
    When 12 clients register the same 4 models and one model of their own at the same instant
    Then every registration is accepted
    And the catalog lists 16 models, each exactly once
    And the hive logged no database error
