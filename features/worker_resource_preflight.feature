Feature: Worker resource preflight
  Before a hive starts a worker it checks that the worker can run here: the model must fit in the
  RAM available (model size × 1.2 plus the reserve the hive keeps for the system), in the free VRAM
  of the GPU it is given, and the backend asked for must exist on the machine. A refused start
  names what was needed, what was there, and what to do instead; no worker process is started.

  Scenario: A worker whose model does not fit in RAM is refused by the hive
    Given a running hive that keeps 1 PiB of RAM in reserve, with the model "big-model" of 1 MiB
    When a worker for "big-model" is requested from the hive
    Then the hive refuses with 507 "INSUFFICIENT_RAM"
    And the error shows the RAM required as 1 MiB × 1.2 + 1 PiB and the RAM available on this machine
    And the message suggests a smaller quantization of the model
    And the hive started no worker

  Scenario: A model fits in the RAM available, with room for the reserve
    Given a machine with 8 GiB of RAM available and a reserve of 256 MiB
    Then a worker for a model of 4 GiB passes the RAM check
    And a worker for a model of 7 GiB is refused with 507 "INSUFFICIENT_RAM" requiring 8.4 GiB + 256 MiB

  Scenario: A model larger than the free VRAM of the GPU asked for is refused
    Given the GPUs of a host as nvidia-smi reported them in "nvidia-smi-2x4090.txt"
    When a worker for a model of 4 GiB is checked against CUDA device 1
    Then it is refused with 507 "VRAM_EXHAUSTED" on device 1
    And the error shows 4.8 GiB of VRAM required and 1620 MiB available
    And the message suggests device 0 and a smaller quantization of the model

  Scenario: The same model fits on the GPU with enough free VRAM
    Given the GPUs of a host as nvidia-smi reported them in "nvidia-smi-2x4090.txt"
    When a worker for a model of 4 GiB is checked against CUDA device 0
    Then the worker may start on device 0 "NVIDIA GeForce RTX 4090"

  Scenario: A GPU that the machine does not have is refused
    Given the GPUs of a host as nvidia-smi reported them in "nvidia-smi-2x4090.txt"
    When a worker for a model of 1 GiB is checked against CUDA device 5
    Then it is refused with 400 "DEVICE_UNAVAILABLE" suggesting device 0 or device 1

  Scenario Outline: A backend the machine does not have is refused by the hive
    Given a running hive on this machine, which has no NVIDIA GPU, with the model "small-model" of 1 MiB
    When a worker for "small-model" is requested from the hive on backend "<backend>"
    Then the hive refuses with 400 "BACKEND_UNAVAILABLE" listing "cpu" as the backend available
    And the message says "<why>"
    And the hive started no worker

    Examples:
      | backend | why                                 |
      | cuda    | Backend 'cuda' is not available     |
      | metal   | Metal is only available on macOS    |
