defmodule RpeerExample.Inbox do
  @moduledoc """
  A process the tests register on a peer node: it keeps the messages it gets (from
  `:rpeer.send/3`, or from a function that `:rpeer.cast/4` runs there) until a caller
  takes them.

  The peer node does not have this project's code path: `start_on/2` loads this module's
  object code there, over the peer's control connection. So it calls nothing but Erlang's
  own modules (Kernel's `send/2`, `length/1` and `++` compile to `:erlang` calls).
  """

  @doc """
  Loads this module on a peer and registers an empty inbox there as `name`. The peer is
  given by its controller (`:rpeer.call/4` runs the code there, over an alternative
  connection), or by its node name when it is connected to this node (`:erpc.call/4`).
  """
  @spec start_on(:rpeer.server_ref() | node(), atom()) :: :ok
  def start_on(peer, name) do
    {__MODULE__, binary, file} = :code.get_object_code(__MODULE__)
    {:module, __MODULE__} = run_on(peer, :code, :load_binary, [__MODULE__, file, binary])
    run_on(peer, __MODULE__, :start, [name])
  end

  defp run_on(node, module, function, args) when is_atom(node),
    do: :erpc.call(node, module, function, args)

  defp run_on(peer, module, function, args), do: :rpeer.call(peer, module, function, args)

  @doc "Runs on the peer: starts an inbox, not linked to the caller, registered as `name`."
  @spec start(atom()) :: :ok
  def start(name) do
    true = :erlang.register(name, :erlang.spawn(__MODULE__, :loop, [[], nil]))
    :ok
  end

  @doc """
  Runs on the peer: waits until the inbox `name` holds `count` messages, and returns
  them, oldest first (they are taken out of the inbox).
  """
  @spec take(atom(), non_neg_integer()) :: [term()]
  def take(name, count) do
    ref = :erlang.make_ref()
    send(name, {__MODULE__, :take, count, self(), ref})

    receive do
      {^ref, messages} -> messages
    end
  end

  @doc false
  # The inbox: messages kept so far (oldest first), and who waits for how many of them.
  def loop(kept, taker) do
    {kept, taker} =
      receive do
        {__MODULE__, :take, count, from, ref} -> {kept, {count, from, ref}}
        message -> {kept ++ [message], taker}
      end

    case taker do
      {count, from, ref} when length(kept) >= count ->
        {taken, rest} = :lists.split(count, kept)
        send(from, {ref, taken})
        loop(rest, nil)

      _ ->
        loop(kept, taker)
    end
  end
end
