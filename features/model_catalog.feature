Feature: Model catalog of a hive
  Every hive keeps the models on its disk in a SQLite catalog: their id, where they come from (the
  provider of the reference), where the file is and how big it is. The size is always read from the
  file itself. A damaged catalog database is put aside and rebuilt from the model files on disk, and
  the catalog can be backed up and restored over the hive's HTTP API.

  Scenario: A model file on disk is registered and found again
    Given a hive catalog in an empty data folder
    And a model file "tinyllama.Q4_K_M.gguf" of 1234567 bytes
    When the file is registered as "tinyllama-q4" from "hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF/tinyllama.Q4_K_M.gguf"
    Then the catalog finds "tinyllama-q4" with provider "hf" and a size of 1234567 bytes
    And the entry of "tinyllama-q4" points at the model file

  Scenario: A model that was never registered is not found
    Given a hive catalog in an empty data folder
    When the hive looks up the model "phi3-mini"
    Then the lookup fails with 404 "MODEL_NOT_FOUND" naming "phi3-mini"

  Scenario: Models are listed by provider
    Given a hive catalog in an empty data folder
    And these model files are registered:
      | model_id     | reference                                          | size |
      | tinyllama-q4 | hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF/t.gguf   | 1000 |
      | qwen-0.5b    | hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/q.gguf          | 2000 |
      | my-finetune  | /srv/models/my-finetune.gguf                       | 3000 |
    Then listing the provider "hf" gives "tinyllama-q4, qwen-0.5b"
    And listing the provider "local" gives "my-finetune"
    And listing the provider "https" gives nothing

  Scenario: The size of a model is read again when its file changes
    Given a hive catalog in an empty data folder
    And a model file "growing.gguf" of 5000 bytes
    And the file is registered as "growing" from "file:///srv/models/growing.gguf"
    When the model file is replaced by one of 9000 bytes
    And the file is registered as "growing" from "file:///srv/models/growing.gguf"
    Then the catalog finds "growing" with provider "file" and a size of 9000 bytes

  Scenario: A file whose checksum does not match is not registered
    Given a hive catalog in an empty data folder
    And a model file "checked.gguf" of 4096 bytes
    When the file is registered as "checked" with a wrong sha256
    Then the registration fails with 400 "CHECKSUM_MISMATCH" showing the actual sha256 of the file
    And the catalog does not hold "checked"

  Scenario: A damaged catalog database is put aside and rebuilt from the model files on disk
    Given a running hive with the configured model "boot-model" of 2004 bytes
    And the model "extra-model" of 3000 bytes was registered over HTTP
    And the model "gone-model" of 1000 bytes was registered over HTTP
    When the hive is stopped
    And its catalog database is overwritten with garbage
    And the file of "gone-model" is deleted
    And the hive is started again
    Then the hive's catalog lists "boot-model, extra-model" with their sizes read from disk
    And the damaged database is kept aside as "catalog.db.corrupt-<timestamp>"
    And the hive's log names the models re-registered and "gone-model" as not found on disk

  Scenario: The catalog is backed up and restored after a model was removed by mistake
    Given a running hive with the configured model "boot-model" of 2004 bytes
    And the model "extra-model" of 3000 bytes was registered over HTTP
    When the catalog is backed up over HTTP
    And the model "extra-model" is removed from the catalog over HTTP
    Then the hive's catalog lists "boot-model" with their sizes read from disk
    When the backup is restored over HTTP
    Then the restore reports "boot-model, extra-model" restored with no missing file
    And the hive's catalog lists "boot-model, extra-model" with their sizes read from disk

  Scenario: Damaged backups are refused and the catalog stays as it was
    Given a running hive with the configured model "boot-model" of 2004 bytes
    When the hive is asked to restore each of these damaged backups:
      | backup                                        | refused because                  |
      | a file of random bytes                        | not a readable SQLite database   |
      | a SQLite database without a models table      | no models table                  |
      | a backup whose index disagrees with its table | integrity check failed           |
    Then each restore is refused with 400 "CATALOG_BACKUP_INVALID" saying why
    And the hive's catalog lists "boot-model" with their sizes read from disk
