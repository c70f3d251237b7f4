Feature: Worker provisioning: the inference engine, built once per feature set
  A worker runs llama.cpp through llama-cpp-python. Its build depends on the host's backend (cpu, cuda,
  metal), OS and libc baseline, CPU architecture, Python and engine version, and for CUDA the toolkit's
  major version and the GPUs' compute capabilities: that feature set decides the CMake flags and
  the key of the build in the wheel cache (~/.cache/rbee/wheels). A feature set built once is never
  built again; an installed engine is checked by importing it.

  Scenario Outline: The feature set of a host decides the CMake flags of its engine build
    Given a "<backend>" host on "<arch>" with Python 3.11, llama-cpp-python 0.3.36 and CUDA architectures "<cuda>"
    Then its engine is built with CMAKE_ARGS "<cmake_args>"
    And its build key reads "<key>" followed by a digest of those flags
    And its engine must <offload> GPU offload

    Examples:
      | backend | arch    | cuda  | cmake_args                                                                           | key                                            | offload     |
      | cpu     | x86_64  | -     | -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF                                                  | 0.3.36-cpu-linux_x86_64-glibc2.36-py3.11-      | not support |
      | cpu     | aarch64 | -     | -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF                                                  | 0.3.36-cpu-linux_aarch64-glibc2.36-py3.11-     | not support |
      | cuda    | x86_64  | 89;90 | -DGGML_CUDA=on -DGGML_NATIVE=OFF -DGGML_CUDA_NO_VMM=ON -DCMAKE_CUDA_ARCHITECTURES=89;90 | 0.3.36-cuda13-sm89.90-linux_x86_64-glibc2.36-py3.11- | support     |
      | metal   | arm64   | -     | -DGGML_METAL=on -DCMAKE_OSX_ARCHITECTURES=arm64 -DCMAKE_APPLE_SILICON_PROCESSOR=arm64 | 0.3.36-metal-darwin_arm64-macos14.0-py3.11-    | support     |

  Scenario: Hosts that differ in any part of their feature set never share a build
    Given a "cpu" host on "x86_64" with Python 3.11, llama-cpp-python 0.3.36 and CUDA architectures "-"
    Then its build key differs from that of the same host with backend "cuda"
    And its build key differs from that of the same host with Python "3.12"
    And its build key differs from that of the same host with llama-cpp-python "0.3.37"
    And its build key differs from that of the same host on "aarch64"
    And its build key differs from that of the same host with libc "glibc2.41"

  Scenario Outline: The backend of a host is chosen from what nvidia-smi reports
    Given a <system> <machine> host whose nvidia-smi printed "<recording>"
    When the backend "auto" is resolved for it
    Then it gets the "<backend>" engine build with <gpus> GPU(s)

    Examples:
      | system | machine | recording                | backend | gpus |
      | Linux  | x86_64  | nvidia-smi-2x4090.txt    | cuda    | 2    |
      | Linux  | x86_64  | nvidia-smi-h100-mig.txt  | cuda    | 1    |
      | Linux  | x86_64  | nvidia-smi-no-driver.txt | cpu     | 0    |
      | Darwin | arm64   | nothing                  | metal   | 0    |

  Scenario: The CPU engine of this machine comes from the wheel cache without a build
    Given the feature set of this machine for the "cpu" backend and the installed engine version
    Then the wheel cache holds a llama-cpp-python wheel for that feature set
    And asking for the engine returns that wheel at once, without running a build
    And the wheel holds the llama_cpp package with its compiled library

  Scenario: A feature set never built before is a cache miss and is built from source
    Given the feature set of this machine for the "cpu" backend and llama-cpp-python "0.3.99"
    Then the wheel cache has no wheel for that feature set
    When the engine is asked for, with the build stopped as soon as it starts
    Then a build from source was started: "pip wheel" of "llama-cpp-python==0.3.99" without dependencies
    And the build got CMAKE_ARGS "-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF" and every CPU core of this machine
    And the stopped build is reported with the end of its log, and the wheel cache is unchanged

  Scenario: The installed engine imports and is a CPU build
    Given the feature set of this machine for the "cpu" backend and the installed engine version
    When the installed engine is verified against that feature set
    Then llama_cpp imports in this Python with the version of the feature set
    And llama_supports_gpu_offload() is false, as a CPU build must report
    And the engine passes the verification

  Scenario: An engine that does not match the build a host needs is caught
    Given the feature set of this machine for the "cuda" backend and the installed engine version
    When the installed engine is verified against that feature set
    Then the verification fails because llama_supports_gpu_offload() is false for a cuda build
