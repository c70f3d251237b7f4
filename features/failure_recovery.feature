Feature: Failure recovery
  Workers crash, hives restart or freeze, workers are asked to stop: a client always gets an
  answer instead of a hang, work that can go on goes on, and the cluster heals.

  Scenario: A worker that crashes mid-stream ends the stream with an error, not a hang
    Given a cluster whose hive keeps 1 worker of "rbee-tiny"
    When a client streams a completion of 1000 tokens
    And the client has received 5 tokens
    And the worker is killed
    Then the stream ends within 3 seconds with the error "WORKER_FAILED" followed by [DONE]
    And the queen holds no request on the worker

  Scenario: A worker that crashes before its first token is replaced by another worker
    Given a cluster whose hive keeps 2 workers of "rbee-tiny"
    And both workers are frozen
    When a client streams a completion of 20 tokens
    And the queen has sent it to one of the frozen workers
    And the other worker resumes and the chosen one is killed
    Then the stream completes with 20 tokens
    And the queen counted 1 failover
    And the other worker generated the 20 tokens

  Scenario: A restarted hive re-adopts the workers that kept running
    Given a cluster whose hive keeps 2 workers of "rbee-tiny"
    When a client streams a completion of 600 tokens
    And the client has received 5 tokens
    And the hive process is killed while the stream runs, and started again
    Then the hive lists the same workers with the same process ids
    And the stream completes with 600 tokens
    And a new request is served by one of those workers

  Scenario: A hive that stops sending heartbeats gets no new requests while its running stream completes
    Given a cluster whose hive keeps 1 worker of "rbee-tiny" with a context of 1280 tokens and turns stale after 1 second without heartbeat
    When a client streams a completion of 1200 tokens
    And the client has received 5 tokens
    And the hive freezes
    Then the queen marks the hive stale while the worker is still generating
    And a new request is refused with 503 "NO_WORKER_AVAILABLE"
    And the stream completes with 1200 tokens
    When the hive resumes
    Then the queen marks the hive online again
    And a new request is served by one of those workers

  Scenario: A worker asked to stop finishes its running stream first
    Given a cluster whose hive has a worker of "rbee-tiny" that it did not start
    When a client streams a completion of 600 tokens
    And the client has received 5 tokens
    And the worker receives SIGTERM
    Then a request sent straight to the worker is refused with 503 "WORKER_DRAINING"
    And the stream completes with 600 tokens
    And the worker exits with status 0
    And the hive no longer lists the worker
