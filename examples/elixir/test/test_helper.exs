defmodule RpeerExample.Checks do
  @moduledoc "Assertions the test modules share."
  import ExUnit.Assertions

  @doc "The peer's controller is rpeer's gen_server, not OTP's peer."
  def assert_rpeer_controller(peer) do
    assert {:rpeer, :init, [_]} = :proc_lib.initial_call(peer)
  end

  @doc "The OS process `os_pid` (as `:os.getpid/0` gives it) has exited."
  def assert_os_process_gone(os_pid) do
    refute File.exists?("/proc/#{os_pid}"), "OS process #{os_pid} still there"
  end
end

ExUnit.start()
