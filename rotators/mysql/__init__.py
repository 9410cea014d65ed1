"""MySQL/MariaDB password rotators (the optional extra ``scaivault-rotator[mysql]``, PyMySQL):
``mysql-password`` changes one account's password in place, ``mysql-dual`` alternates between
two accounts. Guide: docs/writing-rotators.md#mysql-password-and-mysql-dual."""

from rotators.mysql.dual import MysqlDualRotator
from rotators.mysql.password import MysqlPasswordRotator

__all__ = ["MysqlDualRotator", "MysqlPasswordRotator"]
