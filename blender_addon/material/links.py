"""Recording what feeds a node's input and putting it back: the temporary node set-ups (tiling
preview, tile sets) keep these records in the material, so stopping them leaves the tree exactly
as it was, also after save and reopen."""

from __future__ import annotations


def source_of(socket) -> list | None:
    """[node name, output socket identifier] of what feeds `socket`, or None."""
    link = socket.links[0] if socket.is_linked else None
    return [link.from_node.name, link.from_socket.identifier] if link else None


def relink(tree, socket, source: list | None) -> None:
    """Feed `socket` from the recorded `source` again (unlinked when None, or when that node is gone)."""
    for link in list(socket.links):
        tree.links.remove(link)
    upstream = tree.nodes.get(source[0]) if source else None
    if upstream is not None:
        outputs = [s for s in upstream.outputs if s.identifier == source[1]]
        if outputs:
            tree.links.new(outputs[0], socket)


def remove_nodes(tree, names) -> None:
    """Remove the named nodes that still exist."""
    for name in names:
        node = tree.nodes.get(name)
        if node is not None:
            tree.nodes.remove(node)
