"""The libvirt virt driver (see :mod:`.driver`); needs the ``libvirt`` binding
(``pip install 'nubes[libvirt]'``) only when it is chosen."""
