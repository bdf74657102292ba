"""The ISP domain: customers, plans, devices, subscriber services, backups and jobs."""
