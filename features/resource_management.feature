Feature: Resource management across GPUs and RAM
  A hive places a CUDA worker on the GPU with the most free VRAM unless a device is asked for, counts
  the memory that workers still loading will take, and refuses a worker that would not fit in the
  RAM available right now.

  Scenario: The GPU with the most free VRAM is chosen when no device is asked for
    Given the GPUs of a host as nvidia-smi reported them in "nvidia-smi-2x4090.txt"
    When a GPU is chosen for a worker of a model of 4 GiB
    Then CUDA device 0 is chosen, with 23012 MiB free

  Scenario: Only the GPUs the hive may use are considered
    Given the GPUs of a host as nvidia-smi reported them in "nvidia-smi-2x4090.txt"
    And the hive may only use device 1
    When a GPU is chosen for a worker of a model of 1 GiB
    Then CUDA device 1 is chosen, with 1620 MiB free

  Scenario: VRAM promised to a worker still loading counts as used
    Given the GPUs of a host as nvidia-smi reported them in "nvidia-smi-2x4090.txt"
    And a worker is still loading a model of 16 GiB on device 0
    When a GPU is chosen for a worker of a model of 4 GiB
    Then no GPU is chosen: 507 "VRAM_EXHAUSTED" listing the free VRAM of devices 0 and 1

  Scenario: A model no GPU can hold is refused with every GPU's free VRAM
    Given the GPUs of a host as nvidia-smi reported them in "nvidia-smi-2x4090.txt"
    When a GPU is chosen for a worker of a model of 30 GiB
    Then no GPU is chosen: 507 "VRAM_EXHAUSTED" listing the free VRAM of devices 0 and 1

  Scenario: A large model fits on a single H100
    Given the GPUs of a host as nvidia-smi reported them in "nvidia-smi-h100-mig.txt"
    When a GPU is chosen for a worker of a model of 60 GiB
    Then CUDA device 0 is chosen, with 80475 MiB free

  Scenario: RAM promised to a worker still loading counts as used
    Given a machine with 8 GiB of RAM available and a reserve of 256 MiB
    And a worker is still loading a model of 4 GiB
    Then a worker for a model of 2 GiB passes the RAM check
    And a worker for a model of 3 GiB is refused with 507 "INSUFFICIENT_RAM" and 3.2 GiB reported available

  Scenario: The hive refuses a worker that would not fit in the RAM available right now
    Given a running hive with the model "huge-model" as large as the RAM available on this machine
    When a worker for "huge-model" is requested from the hive
    Then the hive refuses with 507 "INSUFFICIENT_RAM"
    And the RAM it reports available is within 10% of what this machine has available now
    And the hive started no worker
