Feature: Model provisioning
  The models of the cluster spec are fetched once into the model cache of the control machine:
  with progress reports, resumed where an interrupted download stopped, verified against their
  sha256 before they are used, and downloaded only once when several deploys ask at the same time.

  Background:
    Given a model server on this machine serving "tiny-q4.gguf" of 3 MiB

  Scenario: A model is downloaded with progress reports
    When the model "tiny-q4" is provisioned from the server with its sha256
    Then the model cache holds "tiny-q4.gguf" with the expected sha256
    And progress was reported from the first bytes up to the full 3 MiB
    And nothing half-done is left in the model cache

  Scenario: An interrupted download keeps its partial file and resumes where it stopped
    Given the server drops the connection after 1 MiB of "tiny-q4.gguf"
    When the model "tiny-q4" is provisioned from the server without retries
    Then provisioning fails with "DOWNLOAD_FAILED" and a hint to run it again to resume
    And the partial file holds the first 1 MiB of the model
    When the model "tiny-q4" is provisioned from the server with its sha256
    Then the second download asked the server for the bytes from 1 MiB on
    And progress reports say the download resumed from 1 MiB
    And the model cache holds "tiny-q4.gguf" with the expected sha256
    And the server sent every byte of the model exactly once

  Scenario: A download whose checksum does not match is refused
    When the model "tiny-q4" is provisioned from the server with a wrong sha256
    Then provisioning fails with "CHECKSUM_MISMATCH" naming the expected and the actual sha256
    And the model cache holds nothing of "tiny-q4", not even a partial file

  Scenario: Two deploys asking for the same model at the same time download it once
    Given the server sends "tiny-q4.gguf" slowly, over about 1 second
    When two deploys provision the model "tiny-q4" at the same time
    Then both get the same verified file
    And the server sent the model only once
    And one of them downloaded it while the other found it in the cache

  Scenario: A model already in the cache is not downloaded again
    Given the model "tiny-q4" was provisioned once
    When the model "tiny-q4" is provisioned from the server with its sha256
    Then the model came from the cache without any request to the server

  Scenario: A model the server does not have is reported as not found
    When the model "ghost" is provisioned from the server path "/ghost.gguf"
    Then provisioning fails with "MODEL_NOT_FOUND" naming the URL
    And the model cache holds nothing of "ghost", not even a partial file
