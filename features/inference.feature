Feature: Inference and cancellation
  A client asks the queen's OpenAI-compatible API for a completion; the queen runs it on a worker
  and streams the tokens back as the worker makes them. The generation stops on the worker when
  the client goes away, when the client cancels it, or when the worker stops answering.

  Background:
    Given a cluster serving "rbee-tiny" on one worker with 2 slots

  Scenario: Tokens stream to the client one chunk per token
    When a client streams a chat completion of 300 tokens
    Then the stream delivers 300 chunks of one token each, then the finish reason "length" and [DONE]
    And the usage counts 300 completion tokens

  # That tokens come while the worker generates is shown by cause and effect, not by a clock: a client
  # holding only its first tokens stops the generation long before its max_tokens.
  Scenario: A client that disconnects stops the generation on the worker
    When a client streams a completion of 1000 tokens
    And the client disconnects after 5 tokens
    Then the worker stops generating within 2 seconds
    And the worker counted one more cancelled request
    And the queen holds no request on the worker

  Scenario: Cancelling a running request stops it, and cancelling it again is harmless
    When a client streams a completion of 1000 tokens
    And the client has received 5 tokens
    And the client cancels the request with DELETE /v1/requests/{id}
    Then the queen answers 204
    And the stream ends within 3 seconds with the error "REQUEST_CANCELLED" followed by [DONE]
    And the worker stops generating within 2 seconds
    When the client cancels the request with DELETE /v1/requests/{id}
    Then the queen answers 204

  Scenario: A request still waiting in the queue is cancelled by the id its client chose
    Given every slot of the worker is taken by a long stream
    When a client sends a completion with the header X-Request-Id "queued-by-client-1"
    Then the request waits in the queen's queue
    When the client cancels "queued-by-client-1" with DELETE /v1/requests/{id}
    Then the queen answers 204
    And the waiting request ends with HTTP 499 "REQUEST_CANCELLED"
    And the queen's queue is empty
    When the long streams are cancelled
    Then "queued-by-client-1" never reached the worker

  Scenario Outline: A request id chosen by the client must be well formed and not in use
    Given a long stream runs with the header X-Request-Id "busy-id-1"
    When a client sends a completion with the header X-Request-Id "<request id>"
    Then the request is refused with <status> "<code>"

    Examples:
      | request id        | status | code              |
      | busy-id-1         | 409    | REQUEST_ID_IN_USE |
      | has a space       | 422    | INVALID_REQUEST   |
      | -starts-with-dash | 422    | INVALID_REQUEST   |

  Scenario: A client reuses its request id once the earlier request is over
    When a client streams a completion of 1000 tokens with the header X-Request-Id "reused-id-1"
    And the client disconnects after 5 tokens
    And the worker stops generating within 2 seconds
    And a client streams a completion of 50 tokens with the header X-Request-Id "reused-id-1"
    Then the stream completes with 50 tokens

  Scenario: A worker that stops answering times the request out and gives its slot back
    When a client streams a completion of 1000 tokens
    And the client has received 5 tokens
    And the worker freezes
    Then the stream ends within 4 seconds with the error "WORKER_TIMEOUT" followed by [DONE]
    And the error says the worker sent nothing for 2 s (request_timeout_s)
    And the queen holds no request on the worker
    When the worker resumes
    Then the worker stops generating within 2 seconds
